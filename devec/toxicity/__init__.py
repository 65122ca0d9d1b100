"""Language models (Sec. 4.3): remove toxicity from LLaMA by negating the toxic task vector's unique component."""
