"""The masked-diffusion sampler: the denoising loop, the per-step commit rule, forward-pass events, live canvas edits and KV caches."""
