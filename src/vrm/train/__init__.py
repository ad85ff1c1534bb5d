"""Training recipes: align (stage 1) and sft (stage 2) of the LLaVA recipe, on accelerate."""
