"""Every model of recbole-llm, registered with RecBole on import."""
from .ensemble import ScoreEnsemble
from .hybrids import LLMSeqSimPopHybrid, LLMSeqSimSeqHybrid
from .llm2seq import LLM2BERT4Rec, LLM2GRU4Rec, LLM2SASRec
from .llmseqprompt import LLMSeqPrompt
from .llmseqsim import LLMSeqSim
from .llmsrec import LLMSRec
from .most_popular import MostPopular
from .semantic import AlphaFuseGRU4Rec, AlphaFuseSASRec, LLMESRGRU4Rec, LLMESRSASRec
from .sequential import PaperBERT4Rec, PaperGRU4Rec, PaperSASRec
from .sknn import SFSKNN, SKNN, SSKNN, VSKNN, SKNNEmb

__all__ = [
    "LLM2SASRec", "LLM2BERT4Rec", "LLM2GRU4Rec", "LLMSeqSim", "SKNN", "VSKNN", "SSKNN", "SFSKNN", "SKNNEmb",
    "LLMSeqSimSeqHybrid", "LLMSeqSimPopHybrid", "LLMSeqPrompt", "LLMSRec", "MostPopular",
    "ScoreEnsemble", "PaperSASRec", "PaperGRU4Rec", "PaperBERT4Rec", "AlphaFuseSASRec", "AlphaFuseGRU4Rec",
    "LLMESRSASRec", "LLMESRGRU4Rec",
]
