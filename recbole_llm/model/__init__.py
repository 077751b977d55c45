"""Every model of recbole-llm, registered with RecBole on import."""
