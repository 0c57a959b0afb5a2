"""RunPod serverless: a team's own GPU worker behind RunPod's queue API."""
