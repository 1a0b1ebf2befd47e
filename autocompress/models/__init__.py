"""Model families: loading a Hugging Face model, and one registered adapter per family that says where
its layers, attention heads, FFN Linears, embeddings and head live."""
