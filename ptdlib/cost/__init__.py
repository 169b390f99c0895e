"""What a canvas costs: forward-pass plans, FLOP counting, published model shapes, hardware and the deployment cost model."""
