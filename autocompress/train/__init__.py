"""Training: fine-tuning the teacher and recovering compressed students by knowledge distillation."""
