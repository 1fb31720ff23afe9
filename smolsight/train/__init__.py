"""Fine-tuning: `dataset` (conversations or a suite as training examples), `finetune` (LoRA
training with evaluation before and after), `merge` (an adapter merged into its base model)."""
