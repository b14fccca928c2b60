"""Challenge data: shard files, the token stream, the tokenizer and its byte tables, the DataModule."""
