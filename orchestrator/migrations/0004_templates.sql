-- The template catalog the marketplace searches: one row per bundle, by slug, with the on-chain
-- template id and price once the bundle is published on TemplateMarket.
CREATE TABLE templates (
    slug TEXT PRIMARY KEY,
    template_id TEXT,
    cid TEXT NOT NULL,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    min_vcpus BIGINT NOT NULL,
    min_memory_gib BIGINT NOT NULL,
    min_disk_gib BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    price BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    added_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX templates_template_id ON templates (template_id);
