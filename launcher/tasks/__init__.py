"""Tasks: tokenizer, model, loss and metrics of each kind of fine-tuning, behind one interface."""
