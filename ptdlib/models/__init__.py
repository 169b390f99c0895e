"""D-LLMs: the embedded model, its tokenizer and training; importing registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from ptdlib.models.modeling import PtdLladaConfig, PtdLladaModel

AutoConfig.register(PtdLladaConfig.model_type, PtdLladaConfig, exist_ok=True)
AutoModel.register(PtdLladaConfig, PtdLladaModel, exist_ok=True)
AutoModelForMaskedLM.register(PtdLladaConfig, PtdLladaModel, exist_ok=True)

__all__ = ["PtdLladaConfig", "PtdLladaModel"]
