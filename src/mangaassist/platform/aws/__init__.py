"""The AWS provider (production). Only the OpenSearch ``VectorIndex`` lives here so far."""
