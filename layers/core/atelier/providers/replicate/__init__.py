"""Replicate's hosted predictions (:mod:`.client`), its webhook signatures (:mod:`.signing`), input mapping."""
