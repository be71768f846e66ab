"""The contract between the control plane and the workers: typed, versioned, torch-free files."""
