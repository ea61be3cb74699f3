"""FlowCLAS (arXiv 2411.19888): the plain nn.Module, its losses and its anomaly map."""
