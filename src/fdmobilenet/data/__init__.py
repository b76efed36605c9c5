"""Data: decoding (images), folders and splits (folders), the built-in digits (digits), the seeded
epoch order (order), prepared shards (packed), the uint8 memory cache (memcache), batched
augmentation (augment) and the batched decode loader (batchloader). Import the module you need."""
