"""Every model of recbole-llm, registered with RecBole on import."""
from .llm2seq import LLM2BERT4Rec, LLM2GRU4Rec, LLM2SASRec

__all__ = ["LLM2SASRec", "LLM2BERT4Rec", "LLM2GRU4Rec"]
