"""In the field: batch prediction over folders, candidate subsets, answers that back off, ONNX export, a web page.

The scoring (lit.serve.scoring), the images (lit.serve.images) and the ONNX predictor
(lit.serve.onnx_predict) use numpy, PIL and onnxruntime only: an exported model runs
without torch. Everything that needs torch (the checkpoint predictor, calibration, the
export) imports it in its own module.
"""
