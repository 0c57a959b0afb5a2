"""A self-hosted Cog model server (Replicate's open-source prediction server): :mod:`.client`."""
