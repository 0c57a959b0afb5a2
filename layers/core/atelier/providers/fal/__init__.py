"""fal.ai: the queue API adapter and its webhook signatures."""
