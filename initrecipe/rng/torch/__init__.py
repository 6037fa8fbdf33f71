"""torch's CPU generator (mt19937) as data: its state, what each draw costs, positions, parallel fills."""
