"""LoRA adapters served without merging: per-request adapters mixed in one batch (a pass over the model).

request.py (LoRARequest, no torch) · adapter.py (read and check a PEFT folder) · layers.py (LoRALinear, the pass)
· batch.py (LoRABatch: per-token slots of one forward) · manager.py (slots, caching, eviction)
"""

from qwick.lora.request import LoRARequest

__all__ = ["LoRARequest"]
