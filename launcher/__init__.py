"""sft-launch: one TOML recipe to a correct, observable fine-tuning run, local or on Slurm."""
