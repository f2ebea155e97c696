-- The published bundle itself, so a VM's user-data can be rendered from its lease's template.
ALTER TABLE templates ADD COLUMN content TEXT;
