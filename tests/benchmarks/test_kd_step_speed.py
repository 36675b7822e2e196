"""benchmarks/kd_step_speed.py: where a KD student step's time goes."""

import kd_step_speed


def test_the_convolutions_part_counts_the_students_convolution_flops():
  rows = {row["part"]: row for row in kd_step_speed.step_parts(1, batch=8)}
  convs = rows["student convs fwd+bwd"]["gflop"]
  student = rows["student fwd+bwd, no norm"]["gflop"]
  # The student without its norm is its convolutions, ReLUs, pools and head.
  assert 0.97 * student < convs <= student
