"""In the field: batch prediction over folders, candidate subsets, answers that back off, ONNX export, a web page.

The scoring (lit.field.scoring), the images (lit.field.images) and the ONNX predictor
(lit.field.onnx_predict) use numpy, PIL and onnxruntime only: an exported model runs
without torch. Everything that needs torch (the checkpoint predictor, calibration, the
export) imports it in its own module.
"""
