"""Backends for other trainers: ``r1fast.integrations.trl.R1FastGRPOTrainer`` (needs trl),
``r1fast.integrations.verl`` (verl's external_lib; needs verl) and ``r1fast.integrations.openrlhf`` (``patch()``,
``reward_func``; needs OpenRLHF)."""
