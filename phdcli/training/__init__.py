"""The training and evaluation side of phd: from PHD^2 annotations to a trained model file.

annotations (the CSV format) -> jobs + engines (local or Ray) -> store (one
shard of C3D features per video) -> dataset (per-user samples, packed) ->
fit / train (PHD-CA + SVM-D + fusion) -> evaluate / metrics (the paper's
protocol). The product pipeline (``phd suggest``) imports nothing from
here; only the model file connects the two. Nothing heavy is imported at
package import.
"""
