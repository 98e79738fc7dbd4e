"""Model file formats, read with no knowledge of any architecture.

safetensors.py: Hugging Face's .safetensors files, memory-mapped; hf.py: a Hugging Face model folder
(config.json, the weight files or shards); gguf.py: llama.cpp's .gguf files (header, tensor layout,
dequantization); checks.py: the checks every number read from a file goes through.
Which tensors mean what is the business of engine/arch/.
"""
