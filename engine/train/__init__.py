"""Training: a NumPy backward pass beside each forward step, AdamW, LoRA."""
