cd /work/main
PY=.venv/bin/python
COMMON="--config configs/folder.py --config.model=resnet18 --config.image_size=64 --config.eval_resize=73 --config.crop_min_area=0.5 --config.random_flip=false --config.batch_size=32 --config.learning_rate=0.05 --config.num_train_steps=150 --config.progress_bar=false"
for data in 10 40; do
  for choice in scratch head norm+head layer4+head all all_ld; do
    w=DIR/runs/d${data}_${choice}; rm -rf $w
    extra="--config.init_from=DIR/pretrained"
    case $choice in
      scratch) extra="" ;;
      all_ld) extra="$extra --config.layer_decay=0.7" ;;
      all) ;;
      *) extra="$extra --config.trainable=$choice" ;;
    esac
    start=$(date +%s.%N)
    $PY train.py $COMMON --workdir $w --config.data_dir=DIR/digits_$data $extra > $w.log 2>&1
    end=$(date +%s.%N)
    echo "$data $choice $(grep -o 'top-1 [0-9.]*' $w.log | tail -1) $(grep -o 'wall time [0-9.]* s' $w.log) command $(echo "$end - $start" | bc) s $(grep -o 'trainable: .*' $w.log)"
  done
done
