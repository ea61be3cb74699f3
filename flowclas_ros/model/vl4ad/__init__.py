"""VL4AD: text-prompted CLIP outlier scoring, prompt sets and score fusion."""
