-- Issue 13: key and CA rotation run under a job lease like the reaper and
-- the checkpointer (one replica at a time, every write fenced).
INSERT INTO job_leaders (name, holder, until) VALUES ('key_rotation', '', 0) ON CONFLICT (name) DO NOTHING;
INSERT INTO job_leaders (name, holder, until) VALUES ('bundle_refresh', '', 0) ON CONFLICT (name) DO NOTHING;
