"""What the tests share: corpora built on the fly, services (S3, Ray clusters), log capture."""
