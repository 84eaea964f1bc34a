"""The pipeline: reads one treatment cycle's files and wires assembly → gate → quantification →
kinetics → dose → tables. The science packages below it (``quant``, ``kinetics``, ``dose``) take
arrays and return arrays; file reading happens here."""
