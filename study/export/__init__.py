"""`study export`: a run's checkpoint as a Hugging Face model folder (study/export/hf.py).

modeling_prores.py is not imported by the package: it is the file an export copies beside the weights for
`trust_remote_code=True` (it imports only torch and transformers).
"""

from study.export.hf import FORMATS, ExportResult, export_run, llama_mismatch

__all__ = ["FORMATS", "ExportResult", "export_run", "llama_mismatch"]
