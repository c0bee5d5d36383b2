-- mailsplice: the mapping table for [mapping] source = "sql", and the trigger that tells
-- every mailsplice node about a changed row, whoever changed it (the admin API of any node,
-- psql, the copy tool's script).
--
--   psql -d mailsplice -f /usr/share/doc/mailsplice/examples/mailsplice-postgres.sql
--
-- The queries that go with it (conf/fleet-node1.toml):
--   query        = "SELECT destination FROM routes WHERE identifier = $1"
--   upsert_query = "INSERT INTO routes (identifier, destination) VALUES ($1, $2)
--                   ON CONFLICT (identifier) DO UPDATE SET destination = EXCLUDED.destination"
--   delete_query = "DELETE FROM routes WHERE identifier = $1"
--
-- identifier is the canonical account (lower case with normalize = "lowercase", with
-- default_domain added), as the admin API writes it. A row written by hand in another form
-- is never found by a lookup, but its notification still drops the right cache entry: the
-- nodes canonicalise what they hear.
--
-- The channel ('mailsplice') must match [mapping.sql] channel. Safe to run again.

CREATE TABLE IF NOT EXISTS routes (
	identifier  text PRIMARY KEY,
	destination text NOT NULL,
	updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION mailsplice_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	-- NOTIFY is sent at commit, and only if the transaction commits
	IF TG_OP = 'TRUNCATE' THEN
		PERFORM pg_notify('mailsplice',
			json_build_object('v', 1, 'type', 'invalidate', 'origin', 'postgres')::text);
		RETURN NULL;
	END IF;
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM pg_notify('mailsplice',
			json_build_object('v', 1, 'type', 'mapping', 'origin', 'postgres',
			                  'account', OLD.identifier)::text);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		PERFORM pg_notify('mailsplice',
			json_build_object('v', 1, 'type', 'mapping', 'origin', 'postgres',
			                  'account', NEW.identifier,
			                  'destination', NEW.destination)::text);
	END IF;
	RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS mailsplice_notify ON routes;
CREATE TRIGGER mailsplice_notify
	AFTER INSERT OR UPDATE OR DELETE ON routes
	FOR EACH ROW EXECUTE FUNCTION mailsplice_notify();

DROP TRIGGER IF EXISTS mailsplice_notify_truncate ON routes;
CREATE TRIGGER mailsplice_notify_truncate
	AFTER TRUNCATE ON routes
	FOR EACH STATEMENT EXECUTE FUNCTION mailsplice_notify();
