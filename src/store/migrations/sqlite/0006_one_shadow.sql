-- At most one shadow model, held by the database (two replicas may set one at once).
CREATE UNIQUE INDEX models_one_shadow ON models (shadow) WHERE shadow;
