"""The AWS provider (production): the platform Protocols on AWS services, one module per resource.

``vector_opensearch`` (``VectorIndex`` on OpenSearch), ``compute_sagemaker`` (``Compute`` for model
endpoints on SageMaker), ``model_registry_sagemaker`` (``ModelRegistry`` on SageMaker Model
Registry). Every class takes its boto3 / opensearch-py clients in the constructor.
"""
