"""Attribution and data transparency: a membership filter and a full-text index over a curated corpus
(`code index`), tracing generated code back to training files (`code trace`), and the data card
(`code datacard`)."""
