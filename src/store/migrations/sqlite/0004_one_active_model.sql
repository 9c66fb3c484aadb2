-- At most one active model, held by the database (several processes may activate at once).
CREATE UNIQUE INDEX models_one_active ON models (status) WHERE status = 'active';
