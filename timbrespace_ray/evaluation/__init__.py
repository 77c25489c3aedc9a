"""How well embeddings tell a label (speaker, language...) apart, against simple baselines:
`run.run_evaluation`, behind `timbrespace-ray evaluate`."""
