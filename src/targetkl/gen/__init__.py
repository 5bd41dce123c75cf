"""Text-to-sound on a VAE's latents: pre-encoding, a flow-matching transformer, sampling, evaluation."""
