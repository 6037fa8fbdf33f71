"""Static passes over a program: facts (verify, infer), plans, cost, lineage and descriptions."""
