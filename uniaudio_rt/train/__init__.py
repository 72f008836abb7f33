"""SAP training of the default tokenizer: config, feature cache, training loop, evaluation."""
