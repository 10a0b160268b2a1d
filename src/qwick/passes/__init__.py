"""Model passes run after loading: quantize, fuse projections, pack weights for the CPU, compile decode steps.

They rewrite a loaded Qwen3 model (model/) with the modules of quant/ and the ops of kernels/; model/ knows none
of them."""
