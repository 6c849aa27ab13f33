"""Stochastically-switched fine-tuning of s2v's LoRA (METHOD §5)."""
