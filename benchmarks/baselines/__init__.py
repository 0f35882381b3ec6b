"""Hand-written M/M/c baseline models that the llmtraffic speed benchmark compares against."""
