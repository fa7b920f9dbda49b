"""The CoLA sentence classifier: the Transformer, its data and LM features."""
