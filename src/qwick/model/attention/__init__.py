"""Attention over the paged KV cache: the backend seam (backend.py), its implementations (sdpa.py portable,
cpu_paged.py qwick's CPU ops), the choice among them (select.py), and the metadata a forward hands them
(metadata.py for grouped [B, T] forwards, flat.py for one-token-axis flat forwards)."""
