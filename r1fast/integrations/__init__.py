"""Backends for other trainers: ``r1fast.integrations.trl.R1FastGRPOTrainer`` (needs trl)."""
