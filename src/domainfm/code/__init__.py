"""Source-code domain (StarCoder / StarCoder2): curate, tokenizer, data, model, train, generate, evaluate."""
