"""Diffusion style mixing with unique components (Sec. 4.2): Flux pipelines, style LoRAs in factor form, metrics."""
