"""CPU kernels: fused int8 layers (VNNI, depthwise) and the default schedule."""
