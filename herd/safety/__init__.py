"""Safety tools: Llama Guard 2 moderation (llama_guard, taxonomy, guard_recipe), Code Shield (codeshield) and
CyberSecEval 2 (cyberseceval). Import the submodule you need; nothing heavy loads here."""
